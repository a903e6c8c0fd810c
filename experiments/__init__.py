"""Studies that run this implementation against the paper's claims (not part of the swinv2_jax
package): `python experiments/paper_claims.py --out DIR`; results in docs/paper_claims/."""
