"""NonZero: no gradient (its output is indices)."""
from . import not_differentiable

not_differentiable("NonZero")
