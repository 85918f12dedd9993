"""The explorer: a local web page over a trained LocSens run (``python explore.py run=...``)."""
