"""A made-up export of Sample City's old 311 system, messy as real exports are, and the mapping that reads it."""
