"""RandomUniformLike: no gradient (its values do not depend on the input's)."""
from . import not_differentiable

not_differentiable("RandomUniformLike")
