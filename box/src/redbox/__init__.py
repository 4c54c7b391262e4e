"""
redbox: Red's box-side library. Stdlib only (it runs on the box's own Python as well as in the
deploy), imported by the tools in /opt/red/bin and by ``operations/``. The tools are thin entry
points into it. One home each for what the tools used to carry on their own:

    registry, resolve, parse   every setting, declared once; the one resolver; the seed's
                               scripts (resolve.SEED_SCRIPTS); the git-ref rule (parse.git_ref)
    log        log lines (one timestamp format), the startup log, the logs dir and its fallback
    state      atomic JSON state files
    lock       flock with a timeout
    retry      bounded retries with exponential backoff and a total deadline
    aside      unique moved-aside / user-files names
    pids       is a process alive
    provision, checkout, models: the logic of red-provision, red-app-checkout, red-app-models
"""
