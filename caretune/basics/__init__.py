"""The basics every part shares, converters included: the error base, atomic files and locks, PII masking, and
the dataset registry (dataset_info.json). They import nothing else of caretune."""
