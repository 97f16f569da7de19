"""Training: a small SD-1.5-shaped model from scratch on synthetic scenes (`tether train
base`) and ControlNet units the way the ControlNet paper trains them (`tether train control`).

- architecture.py: the small model's shape and its tokenizer, with random weights
- data.py: training examples from synthetic scenes or a folder of pairs, and their latents
- loop.py: the optimisation loop every phase shares (progress, checkpoints, resume)
- objectives.py: the losses (autoencoder, noise prediction)
- base.py, control.py: what each command trains
- cli.py: `tether train base|control`
- adherence.py: how closely generated images follow their control units
"""
