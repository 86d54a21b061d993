"""``kidecar rollout``: a desired version written to a workload's pods in batches (DESIGN §10).

spec.py (what a rollout asks), plan.py (the batch logic, pure), record.py (the
state object in the API server), fleet.py (pods and GameServers), driver.py
(the loop), commands.py (the CLI). docs/rollout.md tells the whole story.
"""
