"""zTOC formats and builder (filled in below as the room grows)."""
