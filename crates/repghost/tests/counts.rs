//! Parameter and MAC counts of the deploy form against the paper's Table 2 and the exact
//! reference counts in docs/reference.md (every BatchNorm folded, 3×224×224).

use burn::tensor::Device;
use repghost::variants::resolve;
use repghost::Model;

/// (model, params, MACs) of the deployed reference net.
const TABLE: [(&str, u64, f64); 8] = [
    ("repghostnet_050", 2_302_956, 43.31),
    ("repghostnet_058", 2_533_576, 59.80),
    ("repghostnet_080", 3_261_420, 95.52),
    ("repghostnet_100", 4_051_648, 142.39),
    ("repghostnet_111", 4_515_684, 170.12),
    ("repghostnet_130", 5_450_052, 231.12),
    ("repghostnet_150", 6_542_368, 301.32),
    ("repghostnet_200", 9_752_212, 515.87),
];

#[test]
fn deploy_counts_match_the_paper_table_for_all_widths() {
    let device = Device::flex();
    for (name, params, macs) in TABLE {
        let cfg = resolve(name).unwrap().1.config(1000);
        let deploy = Model::new(&cfg, &device).reparameterize();
        let c = deploy.count([224, 224]);
        assert_eq!(c.params, params, "{name} params");
        let m = c.macs as f64 / 1e6;
        assert!((m - macs).abs() < 0.005, "{name}: {m:.3} M MACs, table {macs}");
    }
}
