"""Size: no gradient (its output is the input's element count)."""
from . import not_differentiable

not_differentiable("Size")
