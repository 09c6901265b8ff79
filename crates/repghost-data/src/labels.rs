//! Class names: ImageNet-1k (built in, from timm's synset and lemma lists) and Fashion-MNIST.

const IMAGENET: &str = include_str!("imagenet_classes.tsv");

/// The 1000 ImageNet class names in class-index order (first lemma of each synset).
pub fn imagenet() -> Vec<String> {
    IMAGENET
        .lines()
        .map(|l| {
            let lemmas = l.split('\t').nth(1).unwrap_or(l);
            lemmas.split(',').next().unwrap_or(lemmas).trim().to_string()
        })
        .collect()
}

pub const FASHION_MNIST: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

#[cfg(test)]
mod tests {
    #[test]
    fn imagenet_has_1000_names_in_order() {
        let n = super::imagenet();
        assert_eq!(n.len(), 1000);
        assert_eq!(n[0], "tench");
        assert_eq!(n[207], "golden retriever");
    }
}
