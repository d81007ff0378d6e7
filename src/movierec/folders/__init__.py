"""The folder owners: every file of a run folder (rundir) and of a prepared-data folder (datadir) is named,
read and written there; io holds the one JSON/JSONL reader and the atomic writes."""
