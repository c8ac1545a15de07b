"""The policy engine: operating points, the policy file, the EWMA cost model, decisions with
hysteresis and their explanations."""
