"""Planning: what a run is (`config`: RunConfig, hashed identity), what a study is (`spec`: expansion into
runs with matched baselines, the plan table), the named scaling rules (`scaling`) and the one fine-tuning
derivation (`finetune`). Torch-free, so a 10,000-run dry run plans in seconds."""
