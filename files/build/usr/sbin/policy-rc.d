#!/bin/sh
# Build time only: package scripts must not start services inside the build.
exit 101
