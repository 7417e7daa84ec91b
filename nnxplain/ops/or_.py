"""Or: no gradient (a boolean op)."""
from . import not_differentiable

not_differentiable("Or")
