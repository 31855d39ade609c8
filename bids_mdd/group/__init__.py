"""Group level: the voxelwise GM ~ group + covariates GLM, FDR and permutation inference."""
