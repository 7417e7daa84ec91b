"""ConstantOfShape: no gradient (its input is a shape)."""
from . import not_differentiable

not_differentiable("ConstantOfShape")
