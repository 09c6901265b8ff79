//! Key names: the reference's, as the plan spells them, and the prefix that data-parallel
//! wrappers add.

pub use repghost_plan::names::torch_key;

/// Strips the `module.` prefix that DistributedDataParallel / DataParallel adds.
pub fn strip_prefix(key: &str) -> &str {
    key.strip_prefix("module.").unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_parallel_prefix_is_stripped() {
        assert_eq!(strip_prefix("module.conv_stem.weight"), "conv_stem.weight");
        assert_eq!(strip_prefix("conv_stem.weight"), "conv_stem.weight");
    }
}
