"""Greater: no gradient (a comparison)."""
from . import not_differentiable

not_differentiable("Greater")
