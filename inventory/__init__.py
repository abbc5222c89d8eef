"""Truth about GPUs: the MIG catalogue, prices, cluster descriptions and (later) live inventory."""
