"""Stand-in for torchaudio on machines where no torchaudio build matches the installed torch.

LLaMA-Factory imports torchaudio at module level but uses it only for audio inputs, which
caretune's text datasets never have. `make setup` puts this folder on the virtual
environment's path only after a real torchaudio failed to import; audio use fails loudly.
"""

__version__ = "0.0.0+caretune.stub"

_MESSAGE = (
    "audio input needs a torchaudio build matching the installed torch; this environment has caretune's stand-in (see `make setup`)"
)


def load(*args, **kwargs):
    raise RuntimeError(_MESSAGE)


class functional:  # noqa: N801 - mirrors the torchaudio.functional namespace
    @staticmethod
    def resample(*args, **kwargs):
        raise RuntimeError(_MESSAGE)
