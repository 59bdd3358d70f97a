"""Learning from what users rate: online reward models over the text of outputs."""
