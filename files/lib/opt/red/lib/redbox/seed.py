"""The seed's boot-time contract: its local provisioning scripts."""

# In the seed's order: without PROVISIONING_SCRIPT the first that exists runs.
SCRIPTS = (
    "/vast_ai_provisioning_script.sh",
    "/src/provisioning_script.sh",
    "/VisoMaster/src/provisioning_script.sh",
)
# The ones this image ships (operations/provisioning.py): each converges the whole box.
OWN_SCRIPTS = SCRIPTS[:2]
