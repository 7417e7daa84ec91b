"""Shape: no gradient (its output is the input's shape)."""
from . import not_differentiable

not_differentiable("Shape")
