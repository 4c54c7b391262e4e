"""Every setting declared once (registry), its parsers (parse) and the one resolver (resolve)."""
