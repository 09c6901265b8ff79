//! A batch split between threads: each member of the workspace's persistent team takes a
//! contiguous share of the images and runs them one at a time through its own single-image
//! workspace (stem, bottlenecks, final conv, pooling), writing its pooled rows or feature
//! maps into buffers of its share; the calling thread then gathers them.

use super::workspace::{Share, Workspace};
use super::Layout;
use crate::model::Model;
use crate::profile::Profile;

impl Model {
    /// Fills `ws.pooled` (or, with `features`, `ws.features`) for every image of the batch.
    pub(super) fn run_split(&self, ws: &mut Workspace, input: &[f32], layout: Layout, features: bool) {
        let split = ws.split.as_ref().expect("a split workspace");
        let per = input.len() / ws.batch;
        let fin = self.final_conv.cout();
        let (depth_first_min, profiling) = (ws.depth_first_min, ws.profile.is_some());
        let shares = &split.shares;
        split.team.run_parts(shares.len(), &|p| {
            let mut share = shares[p].lock().unwrap_or_else(|e| e.into_inner());
            let Share {
                ws: one,
                start,
                len,
                pooled,
                features: maps,
            } = &mut *share;
            one.depth_first_min = depth_first_min;
            if profiling && one.profile.is_none() {
                one.profile = Some(Profile::default());
            }
            for j in 0..*len {
                let x = &input[(*start + j) * per..(*start + j + 1) * per];
                if features {
                    self.body(one, x, layout, true);
                    for (dst, f) in maps.iter_mut().zip(&one.features) {
                        let size = f.data.len();
                        dst[j * size..(j + 1) * size].copy_from_slice(&f.data);
                    }
                } else {
                    self.pooled(one, x, layout);
                    pooled[j * fin..(j + 1) * fin].copy_from_slice(&one.pooled);
                }
            }
        });
        let Some(split) = &mut ws.split else {
            return;
        };
        for share in split.shares.iter_mut() {
            let share = share.get_mut().unwrap_or_else(|e| e.into_inner());
            if let (Some(total), Some(p)) = (&mut ws.profile, &mut share.ws.profile) {
                total.merge(p);
                p.entries.clear();
            }
            if features {
                for (f, src) in ws.features.iter_mut().zip(&share.features) {
                    let size = f.data.len() / ws.batch;
                    f.data[share.start * size..][..share.len * size].copy_from_slice(src);
                }
            } else {
                ws.pooled[share.start * fin..][..share.len * fin].copy_from_slice(&share.pooled);
            }
        }
    }
}
