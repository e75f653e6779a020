"""Names that stand where a family goes without being a model family: the one case of a check that reads no
config ("any"), the capturer's synthetic configs, and "*" (a target that did not load: none of its families
ran). Kept apart from `families` so that reading a report needs no torch."""

ANY_FAMILY, SYNTHETIC, NO_FAMILY = "any", "synthetic", "*"
PSEUDO_FAMILIES = (ANY_FAMILY, SYNTHETIC, NO_FAMILY)
