// Dequantizing loader for int8 models.
#include "quant/quantized_model.h"

#include <cstring>

#include "core/error.h"
#include "io/model_files.h"
#include "quant/recipe.h"

namespace scalebert::quant {

BertModel load_model(const std::filesystem::path& directory, std::optional<TaskHead> head_override) {
  std::optional<QuantizationRecipe> recipe = read_recipe(directory);
  if (!recipe || recipe->dtype != kernels::Precision::kInt8) return BertModel::load(directory, head_override);

  const BertConfig config = BertConfig::from_file(directory);
  WeightStore store = WeightStore::open(directory);
  const TaskHead head = head_override.value_or(task_head_from_name(recipe->head));
  const bool with_pooler = store.has("pooler.dense.weight");
  int64_t num_labels = 0;
  if (head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification) {
    check<FormatError>(store.has("classifier.weight"), directory.string(), ": task head ", task_head_name(head),
                       " needs classifier.weight, which is absent");
    num_labels = store.info("classifier.weight").shape.at(0);
  }
  BertModel model = BertModel::create(config, head, with_pooler, num_labels);
  model.directory = directory;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    Tensor target = model.parameters.get(entry.name);
    check<FormatError>(store.has(entry.name), directory.string(), ": quantized model lacks tensor ", entry.name);
    if (store.info(entry.name).dtype_name != "I8") {
      Tensor source = store.load_f32(entry.name, entry.shape);
      std::memcpy(target.raw(), source.raw(), target.nbytes());
      continue;
    }
    const SafetensorsTensorInfo& info = store.info(entry.name);
    check<FormatError>(info.shape == entry.shape, directory.string(), ": tensor ", entry.name, " has shape ",
                       shape_string(info.shape), ", expected ", shape_string(entry.shape));
    check<FormatError>(entry.shape.size() == 2, directory.string(), ": int8 tensor ", entry.name,
                       " is not a matrix (per-row scales need rows)");
    const std::string scale_name = entry.name + kScaleSuffix;
    check<FormatError>(store.has(scale_name), directory.string(), ": int8 tensor ", entry.name, " has no ", scale_name);
    Tensor scales = store.load_f32(scale_name, {entry.shape[0]});
    Tensor quantized = store.tensor(entry.name);
    const int8_t* q = static_cast<const int8_t*>(quantized.raw());
    float* values = target.data<float>();
    const int64_t rows = entry.shape[0], columns = entry.shape[1];
    for (int64_t row = 0; row < rows; ++row) {
      const float scale = scales.data<float>()[row];
      for (int64_t column = 0; column < columns; ++column) {
        values[row * columns + column] = static_cast<float>(q[row * columns + column]) * scale;
      }
    }
  }
  for (const char* tied : {"embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}) {
    if (store.has(tied)) store.mark_used(tied);
  }
  model.unused_tensors = store.unused_names();
  return model;
}

}  // namespace scalebert::quant
