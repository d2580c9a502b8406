"""Policy files: loading, validation with precise errors, cross-file checks.

The schema (``ModelPolicy``) is in ``scaler.core.policy`` because decide() consumes it.
"""

from scaler.core.policy import ModelPolicy
from scaler.policy.loader import (
    PolicyError,
    PolicyLoadError,
    check_file,
    check_policies,
    fatal,
    load_policies,
    policy_files,
)

__all__ = [
    "ModelPolicy",
    "PolicyError",
    "PolicyLoadError",
    "check_file",
    "check_policies",
    "fatal",
    "load_policies",
    "policy_files",
]
