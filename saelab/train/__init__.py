"""Training SAEs: the recipes (losses, initialisation) and the Lightning module and loop parts."""
