"""From the sweep file to a plan: the schema (one pass, one-line errors), the spec, the plan of trials,
the pre-training stage's plan and the disk a sweep needs. Nothing here starts Ray."""
