"""The classic autoencoder family (dense, denoising, sparse, contractive, variational).

``python -m training.family --out training/results/family`` trains every member and writes
a results table and demo figures; see ``training/README.md``.
"""
