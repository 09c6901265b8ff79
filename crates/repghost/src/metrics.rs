//! Classification metrics accumulated over batches: top-1, top-5, mean cross-entropy and
//! per-class accuracy, as the reference's validation loop reports them.

use serde::Serialize;

/// The `k` most likely classes of one row of logits, most likely first, with their softmax
/// probabilities (computed in f64 from the logits less their maximum). Ties keep the lower
/// index first; `k` is capped at the row's length.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f64)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let exp: Vec<f64> = logits.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(k);
    idx.into_iter().map(|j| (j, exp[j] / sum)).collect()
}

/// `max |got − want| / max |want|`: the relative error every parity check in this project
/// reports (0 when both are all zeros; NaN anywhere gives NaN).
pub fn rel_diff<T: Copy + Into<f64>>(got: &[T], want: &[T]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_diff of slices of different lengths");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.into().abs()));
    let mut diff = 0f64;
    for (&a, &b) in got.iter().zip(want) {
        let d = (a.into() - b.into()).abs();
        if d.is_nan() {
            return f64::NAN;
        }
        diff = diff.max(d);
    }
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    n: usize,
    top1: usize,
    top5: usize,
    loss: f64,
    /// (correct, total) per class.
    per_class: Vec<(usize, usize)>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassAccuracy {
    pub class: String,
    pub images: usize,
    pub top1: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub images: usize,
    pub top1: f64,
    pub top5: f64,
    /// Mean cross-entropy of the logits (natural log).
    pub loss: f64,
    pub per_class: Vec<ClassAccuracy>,
}

impl Accumulator {
    pub fn new(num_labels: usize) -> Self {
        Accumulator {
            per_class: vec![(0, 0); num_labels],
            ..Default::default()
        }
    }

    /// `logits` is `[labels.len(), num_classes]` row-major.
    pub fn update(&mut self, logits: &[f32], labels: &[usize]) {
        if labels.is_empty() {
            return;
        }
        let k = logits.len() / labels.len();
        for (row, &y) in logits.chunks_exact(k).zip(labels) {
            let target = row[y];
            // Rank of the target; ties count against it, as torch.topk would order them.
            let better = row.iter().filter(|&&v| v > target).count();
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            self.loss += lse - target as f64;
            self.n += 1;
            self.top1 += (better == 0) as usize;
            self.top5 += (better < 5) as usize;
            if y >= self.per_class.len() {
                self.per_class.resize(y + 1, (0, 0));
            }
            self.per_class[y].0 += (better == 0) as usize;
            self.per_class[y].1 += 1;
        }
    }

    /// Top-1 accuracy so far (0 before any sample).
    pub fn top1(&self) -> f64 {
        self.top1 as f64 / self.n.max(1) as f64
    }

    pub fn report(&self, class_names: &[String]) -> Report {
        let n = self.n.max(1) as f64;
        Report {
            images: self.n,
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            loss: self.loss / n,
            per_class: self
                .per_class
                .iter()
                .enumerate()
                .map(|(i, &(c, t))| ClassAccuracy {
                    class: class_names.get(i).cloned().unwrap_or_else(|| i.to_string()),
                    images: t,
                    top1: c as f64 / t.max(1) as f64,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_classes_and_gives_softmax_probabilities() {
        let top = top_k(&[1.0, 3.0, 2.0, 3.0], 3);
        let idx: Vec<usize> = top.iter().map(|t| t.0).collect();
        assert_eq!(idx, [1, 3, 2]);
        let z = 2.0 * 1f64.exp() + 1.0 + (-1f64).exp();
        assert!((top[0].1 - 1f64.exp() / z).abs() < 1e-12);
        assert!((top[2].1 - 1.0 / z).abs() < 1e-12);
        assert_eq!(top_k(&[0.5, 0.1], 5).len(), 2);
    }

    #[test]
    fn counts_top1_top5_and_cross_entropy() {
        let mut a = Accumulator::new(2);
        // 6 classes; sample 0 (label 0) is right; sample 1 (label 1) ranks 6th.
        let logits = [5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 9.0, -1.0, 3.0, 2.0, 4.0, 5.0];
        a.update(&logits, &[0, 1]);
        let r = a.report(&["a".into(), "b".into()]);
        assert_eq!((r.top1, r.top5), (0.5, 0.5));
        let ce0 = -(5f64.exp() / (5f64.exp() + 1f64.exp() + 4.0)).ln();
        let row1 = [9.0f64, -1.0, 3.0, 2.0, 4.0, 5.0];
        let ce1 = -((-1f64).exp() / row1.iter().map(|v| v.exp()).sum::<f64>()).ln();
        assert!((r.loss - (ce0 + ce1) / 2.0).abs() < 1e-9);
        assert_eq!(r.per_class[1].top1, 0.0);
    }
}
