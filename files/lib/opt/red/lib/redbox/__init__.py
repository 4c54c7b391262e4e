"""
redbox: Red's box-side library (stdlib only, Python >= 3.10).

The tools in /opt/red/bin are thin entry points into it; the deploy (operations/) imports the
same package from the repository. One home each for what the tools used to carry on their own:

    log        log lines (one timestamp format), the startup log, the logs dir and its fallback
    state      atomic JSON state files
    lock       flock with a timeout
    retry      bounded retries with exponential backoff and a total deadline
    aside      unique moved-aside / user-files names
    pids       is a process alive
    seed       the seed's provisioning scripts
    gitref     which git refs a user may name
    provision, checkout, models: the logic of red-provision, red-app-checkout, red-app-models
"""
