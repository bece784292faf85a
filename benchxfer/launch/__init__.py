"""The Ray side: the session or cluster, the seam with Tune (plain-data configs), the console, the trial
driver, the lr search and the runner that carries a plan through Ray to its report."""
