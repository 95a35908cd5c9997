"""hydrapick inside RELION 4/5: External job executables (console scripts) for picking and fine-tuning.

`hydrapick.relion.job` reads the command line RELION builds for an External job and follows RELION's
end-of-job protocol; `hydrapick.relion.pick_job` (``hydrapick-relion-pick``) and
`hydrapick.relion.finetune_job` (``hydrapick-relion-finetune``) are the two jobs. Set-up: docs/relion.md.
"""
