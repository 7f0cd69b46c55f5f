"""The confirmatory study (study/): a DVC pipeline of its own over the project's stages.

- `config`: study/params.yaml, its pre-registered analysis, and each run directory's params.
- `summaries`: one arm of one seed condensed into a git-tracked summary.
- `analysis`: the pre-registered tests over the summaries (scipy.stats, statsmodels).
- `report`: the study's report.
- `pipeline_file`: study/dvc.yaml, written from the main pipeline's stages.

It sits at the top of the package, above the evaluation whose statistics it reads.
"""
