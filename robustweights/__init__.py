"""robustweights: sample weights that resist label noise."""
