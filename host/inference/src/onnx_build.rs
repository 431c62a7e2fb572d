//! Writes small, real ONNX models (dense layers, a per-pixel logistic map)
//! and their `config.json`, for tests, the benchmark and examples, with no
//! Python toolchain: the protobuf types come from tract-onnx itself.

use prost::Message;
use std::path::Path;
use tract_onnx::pb::{
    self, tensor_shape_proto::dimension::Value as DimValue, type_proto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

const FLOAT: i32 = 1;

/// One dense layer: `y = x · weights + bias`, `weights` row-major
/// `[inputs, outputs]`.
#[derive(Debug, Clone)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    /// Weights and biases drawn from a fixed pseudo-random sequence, scaled
    /// so activations keep their magnitude through a few layers.
    pub fn seeded(inputs: usize, outputs: usize, seed: u64) -> Dense {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let scale = (3.0 / inputs as f32).sqrt();
        let weights = (0..inputs * outputs).map(|_| next() * scale).collect();
        let bias = (0..outputs).map(|_| next() * 0.1).collect();
        Dense { inputs, outputs, weights, bias }
    }

    /// What this layer computes for one row, for checking a model's output
    /// independently of any engine.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        (0..self.outputs)
            .map(|o| self.bias[o] + (0..self.inputs).map(|i| x[i] * self.weights[i * self.outputs + o]).sum::<f32>())
            .collect()
    }
}

/// A multi-layer perceptron `[N, in] -> [N, out]` with ReLU between the
/// layers (none after the last).
pub fn mlp(input: &str, output: &str, layers: &[Dense]) -> Vec<u8> {
    mlp_with_batch(input, output, layers, -1)
}

/// [`mlp`] whose file fixes the batch dimension at `batch` (`-1`: any),
/// as many exported models do.
pub fn mlp_with_batch(input: &str, output: &str, layers: &[Dense], batch: i64) -> Vec<u8> {
    assert!(!layers.is_empty(), "an MLP needs a layer");
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut current = input.to_owned();
    for (ix, layer) in layers.iter().enumerate() {
        let (w, b) = (format!("w{ix}"), format!("b{ix}"));
        initializers.push(floats(&w, &[layer.inputs as i64, layer.outputs as i64], &layer.weights));
        initializers.push(floats(&b, &[layer.outputs as i64], &layer.bias));
        let last = ix + 1 == layers.len();
        let (mm, sum) = (format!("mm{ix}"), if last { output.to_owned() } else { format!("sum{ix}") });
        nodes.push(node("MatMul", &[&current, &w], &mm));
        nodes.push(node("Add", &[&mm, &b], &sum));
        current = sum;
        if !last {
            let relu = format!("relu{ix}");
            nodes.push(node("Relu", &[&current], &relu));
            current = relu;
        }
    }
    let first = layers[0].inputs as i64;
    let out = layers[layers.len() - 1].outputs as i64;
    model(nodes, initializers, vec![value(input, &[batch, first])], vec![value(output, &[batch, out])])
}

/// A per-pixel foreground probability `sigmoid(scale * x + bias)` on
/// `[N, 1, H, W]` images of any size.
pub fn pixel_logistic(input: &str, output: &str, scale: f32, bias: f32) -> Vec<u8> {
    let nodes = vec![
        node("Mul", &[input, "scale"], "scaled"),
        node("Add", &["scaled", "bias"], "logit"),
        node("Sigmoid", &["logit"], output),
    ];
    let initializers = vec![floats("scale", &[], &[scale]), floats("bias", &[], &[bias])];
    model(nodes, initializers, vec![value(input, &[-1, 1, -1, -1])], vec![value(output, &[-1, 1, -1, -1])])
}

/// Writes `<repo>/<name>/model.onnx` and `<repo>/<name>/config.json`.
pub fn write_model(repo: &Path, name: &str, onnx: &[u8], config: &serde_json::Value) -> std::io::Result<()> {
    let dir = repo.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("model.onnx"), onnx)?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(config)?)
}

fn model(
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    input: Vec<ValueInfoProto>,
    output: Vec<ValueInfoProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "stagecraft-inference".into(),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(GraphProto { name: "g".into(), node: nodes, initializer, input, output, ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// A float tensor's declaration; `-1` dimensions get a symbolic name.
fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| pb::tensor_shape_proto::Dimension {
            value: Some(if d < 0 {
                DimValue::DimParam(if i == 0 { "N".into() } else { format!("d{i}") })
            } else {
                DimValue::DimValue(d)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
