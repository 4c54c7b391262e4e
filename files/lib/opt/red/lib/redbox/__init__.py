"""
redbox: Red's box-side library. Stdlib only (it runs on the box's own Python as well as in the
deploy), imported by the tools in /opt/red/bin and by ``operations/``.
"""
