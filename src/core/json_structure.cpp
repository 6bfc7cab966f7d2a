// See json_structure.hpp.
#include "core/json_structure.hpp"

#include <set>
#include <vector>

#include <nlohmann/json.hpp>

namespace pneumo {

namespace {

class StructureCheck : public nlohmann::json::json_sax_t {
 public:
  using json = nlohmann::json;
  StructureCheck(JsonStructure& result, size_t max_depth) : result_(result), max_depth_(max_depth) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(json::number_integer_t) override { return true; }
  bool number_unsigned(json::number_unsigned_t) override { return true; }
  bool number_float(json::number_float_t, const json::string_t&) override { return true; }
  bool string(json::string_t&) override { return true; }
  bool binary(json::binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(json::string_t& key) override {
    if (open_levels_.back().insert(key).second) return true;
    result_.repeated_key = key;
    result_.repeated_key_depth = open_levels_.size();
    return false;  // sax_parse stops and returns false
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& error) override {
    result_.valid = false;
    result_.parse_error = error.what();
    return false;
  }

 private:
  bool open() {
    if (open_levels_.size() >= max_depth_) {
      result_.too_deep = true;
      return false;
    }
    open_levels_.emplace_back();
    return true;
  }
  bool close() {
    open_levels_.pop_back();
    return true;
  }

  JsonStructure& result_;
  size_t max_depth_;
  std::vector<std::set<std::string>> open_levels_;  // keys seen in each open object
};

}  // namespace

JsonStructure check_json_structure(const char* begin, const char* end, size_t max_depth) {
  JsonStructure result;
  StructureCheck check(result, max_depth);
  nlohmann::json::sax_parse(begin, end, &check);
  return result;
}

}  // namespace pneumo
