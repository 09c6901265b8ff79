//! Labelled image sources behind one trait, and a loader that decodes and preprocesses
//! batches on a background thread with rayon, so the model never waits on the disk and
//! memory stays bounded (a few batches in flight) however large the dataset.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rayon::prelude::*;

use crate::folder::ImageFolder;
use crate::idx::Mnist;
use crate::image::{decode, Image};
use crate::transform::Preprocess;

/// A random-access labelled image source.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The image and its class, or an error message.
    fn load(&self, i: usize) -> Result<(Image, usize), String>;
    /// What to call sample `i` in messages (a path, or `test[17]`).
    fn name(&self, i: usize) -> String;
    fn classes(&self) -> Vec<String>;
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn load(&self, i: usize) -> Result<(Image, usize), String> {
        let (path, label) = &self.samples[i];
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        Ok((decode(&bytes)?, *label))
    }
    fn name(&self, i: usize) -> String {
        self.samples[i].0.display().to_string()
    }
    fn classes(&self) -> Vec<String> {
        self.classes.clone()
    }
}

impl Dataset for Mnist {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn load(&self, i: usize) -> Result<(Image, usize), String> {
        Ok((self.image(i), self.labels[i] as usize))
    }
    fn name(&self, i: usize) -> String {
        format!("image {i}")
    }
    fn classes(&self) -> Vec<String> {
        crate::labels::FASHION_MNIST
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// Unlabelled files given on a command line (label 0).
pub struct Files(pub Vec<PathBuf>);

impl Dataset for Files {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load(&self, i: usize) -> Result<(Image, usize), String> {
        let bytes = std::fs::read(&self.0[i]).map_err(|e| e.to_string())?;
        Ok((decode(&bytes)?, 0))
    }
    fn name(&self, i: usize) -> String {
        self.0[i].display().to_string()
    }
    fn classes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One decoded and preprocessed sample (input, label), or why it failed.
type Sample = Result<(Vec<f32>, usize), String>;

/// Preprocessed samples, `[n, C, S, S]` row-major, and the samples that failed.
#[derive(Debug, Default)]
pub struct Batch {
    pub inputs: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<usize>,
    /// Dataset indices of the rows of `inputs`.
    pub indices: Vec<usize>,
    /// (sample name, error) of samples that could not be decoded.
    pub failed: Vec<(String, String)>,
}

/// Streams `indices` of `ds` as batches of `batch_size`, decoded in parallel; at most
/// `prefetch` batches wait in memory.
pub fn batches<D: Dataset + 'static + ?Sized>(
    ds: Arc<D>,
    indices: Vec<usize>,
    pre: Preprocess,
    batch_size: usize,
    prefetch: usize,
) -> Receiver<Batch> {
    let shape = [pre.channels, pre.img_size];
    let f = move |_: usize, img: &Image| pre.apply(img);
    batches_with(ds, indices, shape, Arc::new(f), batch_size, prefetch)
}

/// Turns a decoded sample (with its position in the stream) into model input.
pub type TransformFn = Arc<dyn Fn(usize, &Image) -> Vec<f32> + Send + Sync>;

/// [`batches`] with any transform (e.g. a seeded training augmentation); `shape` is
/// `[channels, side]` of what `f` returns. `f` receives the sample's position in `indices`.
pub fn batches_with<D: Dataset + 'static + ?Sized>(
    ds: Arc<D>,
    indices: Vec<usize>,
    shape: [usize; 2],
    f: TransformFn,
    batch_size: usize,
    prefetch: usize,
) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(prefetch.max(1));
    std::thread::spawn(move || {
        let [c, s] = shape;
        let bs = batch_size.max(1);
        for (k, chunk) in indices.chunks(bs).enumerate() {
            let items: Vec<(usize, Sample)> = chunk
                .par_iter()
                .enumerate()
                .map(|(j, &i)| (i, ds.load(i).map(|(img, label)| (f(k * bs + j, &img), label))))
                .collect();
            let mut b = Batch::default();
            for (i, r) in items {
                match r {
                    Ok((x, label)) => {
                        b.inputs.extend(x);
                        b.labels.push(label);
                        b.indices.push(i);
                    }
                    Err(e) => b.failed.push((ds.name(i), e)),
                }
            }
            b.shape = [b.labels.len(), c, s, s];
            if tx.send(b).is_err() {
                return; // the consumer stopped
            }
        }
    });
    rx
}
