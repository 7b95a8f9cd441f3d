"""`lossreport watch`: the loop that watches a runs directory (watch.py), decides from each
run's state and render marker whether it needs a render (runstate.py), and hands renders to
worker processes (jobs.py); netfs.py and sdnotify.py are its ties to the machine."""
