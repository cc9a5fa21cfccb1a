"""Keras's functional API: layers called on KerasTensors (`Input` and what layers made of
it) record nodes; `Model(inputs, outputs)` (a `Functional`) runs the graph between them.

A node is one call of a layer on KerasTensors. The model orders its nodes as Keras's
map_graph does (by depth from the outputs, ties by first traversal), runs them forwards in
that order and backwards in the reverse order, summing the gradients of a tensor that
several layers read. Masks flow along the edges as in Keras (`compute_mask`).
"""
import numpy as np

from fastlstm import backend, layers
from fastlstm.layers import InputLayer, KerasTensor
from fastlstm.models import Model, _as_batchable, _InputColumns


class Node:
    """One call of `layer` on KerasTensors: `inputs` as called (a tensor or a list of them),
    `outputs` (a tensor, or a list for a layer with several outputs)."""

    def __init__(self, layer, inputs, outputs):
        self.layer, self.inputs, self.outputs = layer, inputs, outputs

    @property
    def input_tensors(self):
        return list(self.inputs) if isinstance(self.inputs, (list, tuple)) else [self.inputs]

    @property
    def output_tensors(self):
        return list(self.outputs) if isinstance(self.outputs, list) else [self.outputs]


def call_symbolic(layer, inputs, training=False, mask=None):
    """layer(inputs) on KerasTensors: the layer is built for their shapes (and checks them),
    a node is recorded, and the output KerasTensor(s) come back."""
    if training not in (False, None) or mask is not None:
        raise ValueError(f"{layer.name}: a call on KerasTensors takes its mask from the graph and the training "
                         "flag from fit/predict; pass neither training= nor mask=")
    if isinstance(inputs, tuple):
        inputs = list(inputs)
    flat = inputs if isinstance(inputs, list) else [inputs]
    if not all(isinstance(t, KerasTensor) for t in flat):
        raise TypeError(f"{layer.name} was called on a mix of KerasTensors and other values: a layer of a "
                        "functional model takes only tensors made by keras.Input and layers")
    if isinstance(layer, InputLayer):
        raise TypeError("an InputLayer makes a model's input (keras.Input); it cannot be called on a tensor")
    shape = [t.shape for t in flat] if isinstance(inputs, list) else inputs.shape
    out_shape = layer.output_shape(shape)
    if not layer.built:
        layer.build(shape)
    node_index = len(layer._inbound_nodes)
    if isinstance(out_shape, list):
        outputs = [KerasTensor(s, name=backend.auto_name("keras_tensor")) for s in out_shape]
    else:
        outputs = KerasTensor(out_shape, name=backend.auto_name("keras_tensor"))
    for k, t in enumerate(outputs if isinstance(outputs, list) else [outputs]):
        t._keras_history = (layer, node_index, k)
    layer._inbound_nodes.append(Node(layer, inputs, outputs))
    return outputs


def _flat(structure, what):
    """A model's inputs or outputs as a list of KerasTensors, and their names when given as
    a dict (Keras's structures: one tensor, a list or a dict)."""
    if isinstance(structure, dict):  # in key order, as Keras's tree.flatten
        names = sorted(structure)
        tensors = [structure[k] for k in names]
    elif isinstance(structure, (list, tuple)):
        names, tensors = None, list(structure)
    else:
        names, tensors = None, [structure]
    if not tensors or not all(isinstance(t, KerasTensor) for t in tensors):
        raise ValueError(f"Model's {what} must be KerasTensors (made by keras.Input and layers called on it), "
                         f"got {structure!r}")
    return tensors, names


def _map_graph(inputs, outputs):
    """(nodes in the order to run them, layers in Keras's order) of the graph from `inputs`
    to `outputs`, as Keras's map_graph: every tensor reachable from the inputs, no cycles,
    unique layer names."""
    finished, order, first_seen = set(), [], {}

    def visit(tensor):  # depth first from the outputs: `order` lists nodes inputs -> outputs
        layer, node_index, _ = tensor._keras_history
        if isinstance(layer, InputLayer):
            first_seen.setdefault(layer, len(first_seen))
            return
        node = layer._inbound_nodes[node_index]
        if id(node) in finished:
            return
        first_seen.setdefault(layer, len(first_seen))
        for t in node.input_tensors:
            visit(t)
        finished.add(id(node))
        order.append(node)

    for t in outputs:
        visit(t)
    # depth: the longest path to an output (Keras runs and lists layers deepest first); an
    # InputLayer's depth is one more than its deepest reader's, as its node's in Keras
    depth = {}
    for node in reversed(order):
        d = depth.setdefault(id(node), 0)
        for t in node.input_tensors:
            layer, node_index, _ = t._keras_history
            key = id(layer) if isinstance(layer, InputLayer) else id(layer._inbound_nodes[node_index])
            depth[key] = max(depth.get(key, 0), d + 1)
    layer_depth = {node.layer: depth[id(node)] for node in order}
    input_layers = [t._keras_history[0] for t in inputs]
    for layer in list(first_seen):
        if isinstance(layer, InputLayer):
            if layer not in input_layers:
                raise ValueError(f"Graph disconnected: the model's outputs need the input '{layer.name}', which "
                                 "is not one of its inputs")
            layer_depth[layer] = depth.get(id(layer), 0)
    for layer in input_layers:  # an input no output needs is still the model's (Keras: depth 0)
        layer_depth.setdefault(layer, 0)
        first_seen.setdefault(layer, len(first_seen))
    nodes = sorted(order, key=lambda n: -depth[id(n)])  # stable: ties keep the traversal order
    model_layers = sorted(layer_depth, key=lambda layer: (-layer_depth[layer], first_seen[layer]))
    names = [layer.name for layer in model_layers]
    for name in names:
        if names.count(name) != 1:
            raise ValueError(f'The name "{name}" is used {names.count(name)} times in the model. All operation '
                             "names should be unique.")
    return nodes, model_layers


class Functional(Model):
    """`keras.Model(inputs, outputs)`: the graph of layers between `inputs` (keras.Input
    tensors: one, a list or a dict) and `outputs` (one, a list or a dict); predict gives
    the outputs in the same structure. Everything Sequential has (compile, fit, evaluate,
    predict, save, summary) works on it; several outputs take a loss each (see Model.compile)."""

    def __init__(self, inputs, outputs, name=None, trainable=True):
        if not trainable:
            raise ValueError("Model(trainable=False) is not supported by fastlstm: freeze its layers instead")
        super().__init__(name=name or backend.auto_name("functional"))
        self.inputs, self._input_names = _flat(inputs, "inputs")
        self.outputs, self._output_keys = _flat(outputs, "outputs")
        self._inputs_struct, self._outputs_struct = inputs, outputs
        for t in self.inputs:
            if not isinstance(t._keras_history[0], InputLayer):
                raise ValueError(f"Model's inputs must come from keras.Input: {t.name} was made by layer "
                                 f"'{t._keras_history[0].name}'")
        self._nodes, self.layers = _map_graph(self.inputs, self.outputs)
        calls = {}
        for node in self._nodes:
            calls[node.layer] = calls.get(node.layer, 0) + 1
        shared = [layer.name for layer, n in calls.items() if n > 1]
        if shared:
            raise ValueError(f"layers {shared} are called more than once in the model (shared layers): fastlstm's "
                             "layers keep one call's values for the backward pass, so each layer can be called "
                             "once per model")
        # a model output that other layers also read, or that is listed twice, takes its loss from its values
        # (its gradient adds to theirs; a loss from the logits would not)
        read = [id(t) for node in self._nodes for t in node.input_tensors] + [id(t) for t in self.outputs]
        self._plain_outputs = [read.count(id(t)) > 1 for t in self.outputs]
        self._input_shape = self.inputs[0].shape if len(self.inputs) == 1 else [t.shape for t in self.inputs]
        self._output_shapes = [t.shape for t in self.outputs]

    @property
    def output_names(self):
        """Keras's: the name of the layer that makes each output."""
        return [t._keras_history[0].name for t in self.outputs]

    @property
    def _loss_names(self):
        """What losses, metrics and labels are keyed by: the outputs' dict keys when they were
        given as a dict, else their layers' names (Keras's)."""
        return list(self._output_keys) if self._output_keys is not None else self.output_names

    @property
    def input(self):
        """The inputs as given to Model (one tensor unwrapped), as Keras's."""
        return self._inputs_struct[0] if isinstance(self._inputs_struct, (list, tuple)) and \
            len(self._inputs_struct) == 1 else self._inputs_struct

    @property
    def output(self):
        return self._outputs_struct[0] if isinstance(self._outputs_struct, (list, tuple)) and \
            len(self._outputs_struct) == 1 else self._outputs_struct

    @property
    def input_names(self):
        return list(self._input_names) if self._input_names is not None else \
            [t._keras_history[0].name for t in self.inputs]

    @property
    def built(self):
        return True

    def build(self, input_shape=None):
        pass

    def _ensure_built(self, x):
        pass

    def _batchable(self, x, what):
        return _as_batchable(x, what, self.input_names)

    def _split_inputs(self, x):
        """The model's input arrays, in `inputs` order, from x (an array for one input, the
        _InputColumns of _batchable for several), checked against the inputs' shapes."""
        arrays = x.arrays if isinstance(x, _InputColumns) else [x]
        if len(arrays) != len(self.inputs):
            raise ValueError(f"the model has {len(self.inputs)} inputs, got {len(arrays)} arrays")
        for a, t in zip(arrays, self.inputs):
            if np.ndim(a) != len(t.shape) or any(d is not None and d != s for d, s in zip(t.shape[1:], np.shape(a)[1:])):
                raise ValueError(f"Input {t._keras_history[0].name!r} of the model expects shape {t.shape}, got "
                                 f"an array of shape {np.shape(a)}")
        return arrays

    def _forward(self, x, training):
        """([each output], [each output's mask], the activity penalties): the nodes in order,
        each reading its inputs' values and masks."""
        values, masks = {}, {}
        for t, a in zip(self.inputs, self._split_inputs(x)):
            values[id(t)], masks[id(t)] = a, None
        penalty = np.float32(0)
        for node in self._nodes:
            if isinstance(node.inputs, list):
                x_in = [values[id(t)] for t in node.inputs]
                m_in = [masks[id(t)] for t in node.inputs]
                m_in = None if all(m is None for m in m_in) else m_in
            else:
                x_in, m_in = values[id(node.inputs)], masks[id(node.inputs)]
            out = node.layer.call(x_in, training=training, mask=m_in)
            mask = node.layer.compute_mask(x_in, m_in)
            penalty += np.float32(node.layer.activity_penalty(out[0] if isinstance(out, list) else out))
            outs, out_masks = (out, mask) if isinstance(out, list) else ([out], [mask])
            for t, v, m in zip(node.output_tensors, outs, out_masks):
                values[id(t)], masks[id(t)] = v, m
        outs = [np.asarray(values[id(t)]) if plain else values[id(t)]
                for t, plain in zip(self.outputs, self._plain_outputs)]
        if training:  # what backward needs (TokenSequences' ids to sum their gradients); an inference
            self._values = values  # call (on another thread, between a step's forward and backward) keeps it
        return outs, [masks[id(t)] for t in self.outputs], penalty

    def _backward(self, ds):
        """Gradients of every weight, in `weights` order, from ds = [dL/d(output), ...] (None
        for an output without a loss). A layer none of whose outputs took a gradient gets
        zeros."""
        grad_of = {}

        def add(t, d):
            if d is not None:
                grad_of[id(t)] = d if id(t) not in grad_of else \
                    layers._add_input_gradients(grad_of[id(t)], d, self._values.get(id(t)))

        for t, d in zip(self.outputs, ds):
            add(t, d)
        by_layer = {}
        for node in reversed(self._nodes):
            d_out = [grad_of.pop(id(t), None) for t in node.output_tensors]
            if all(d is None for d in d_out):
                if getattr(node.layer, "activity_regularizer", None) is None:
                    by_layer[node.layer] = [np.zeros_like(w) for w in node.layer.weights]
                    continue
                # no loss reaches this output, but its activity penalty is part of the loss
                d_out[0] = np.zeros(np.shape(self._values[id(node.output_tensors[0])]), np.float32)
            d_in, by_layer[node.layer] = node.layer.backward(d_out if isinstance(node.outputs, list) else d_out[0])
            for t, d in zip(node.input_tensors, d_in if isinstance(node.inputs, list) else [d_in]):
                if not isinstance(t._keras_history[0], InputLayer):
                    add(t, d)
        return [g for layer in self.layers for g in by_layer.get(layer, [])]

    def _structured(self, outs):
        """Predictions in the structure the outputs were given in (one array, a list, a dict)."""
        if self._output_keys is not None:
            return dict(zip(self._output_keys, outs))
        if len(outs) == 1:
            return outs[0]  # Keras unpacks a one-output list
        return tuple(outs) if isinstance(self._outputs_struct, tuple) else list(outs)

    # ---- config ------------------------------------------------------------------------
    def get_config(self):
        from fastlstm import saving
        return saving.functional_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from fastlstm import saving
        return saving.functional_from_config(config, custom_objects)
