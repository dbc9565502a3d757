"""The one base class of every error a user can cause (bad input, paths, values, a busy lock).

The `caretune` command catches it once and prints its message as one line, exit 1; the message names the
file, line or key and the fix. Anything else is a bug and keeps its traceback.

A subclass exists only where some code catches it by name: RegistryError (basics/registry.py), RecipeError and
its PreflightError (recipe.py, training/preflight.py), TokenizerError and ProfileError (prep/), PlanError
(planning/plan.py), RayError (training/ray_train.py) and KitError (devtools/gpukit.py). Everything else raises
UserError itself.
"""


class UserError(Exception):
    """Something the user can fix; the message says what and where."""
