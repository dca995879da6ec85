"""Views of a run for people: a static HTML report, notebook views and exports."""
