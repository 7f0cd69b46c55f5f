"""The dose-response study (study/): a DVC pipeline of its own over the project's stages.

- `config`: study/params.yaml and the params file of each run directory it derives.
- `summaries`: one arm's results condensed into a git-tracked summary.
- `report`: the study's tests over the summaries, and its report.

It sits at the top of the package, above the evaluation whose statistics it reads.
"""
