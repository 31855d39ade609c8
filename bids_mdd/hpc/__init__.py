"""Running bids_mdd on a cluster: job folders for SLURM."""
