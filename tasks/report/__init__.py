"""The evaluation report of ``avemo report``: analysis of the evaluated systems, its figures, and the HTML page."""
