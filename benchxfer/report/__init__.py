"""From runs to tables: results collected from MLflow or the trial folders, the summary, tests, figures,
the report's files and HTML, the same published on the sweep's MLflow run, and the report commands."""
