"""ArgMin: no gradient (its output is an index)."""
from . import not_differentiable

not_differentiable("ArgMin")
