"""IsNaN: no gradient (a test of each element)."""
from . import not_differentiable

not_differentiable("IsNaN")
