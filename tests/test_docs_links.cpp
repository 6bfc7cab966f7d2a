// The documentation's links lead somewhere: every relative link in the project's Markdown names a
// file or folder of the repository, a #fragment names a heading of the page it points into (as
// GitHub makes anchors of headings), and every docs/*.md page the sources and scripts name (in
// messages, --help texts, comments) exists. A page moved or a heading reworded otherwise leaves
// readers at a dead link, and no build notices.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "temp_dir.hpp"

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// GitHub's anchor of a heading's text: lower case, spaces to hyphens, letters, digits, '-' and '_'
// kept, everything else dropped (non-ASCII bytes too: the pages' headings hold symbols such as
// '±' there, no accented letters).
std::string anchor_of(const std::string& heading) {
  std::string anchor;
  for (const char ch : heading) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80) continue;
    if (std::isalnum(c) || c == '-' || c == '_')
      anchor += static_cast<char>(std::tolower(c));
    else if (c == ' ')
      anchor += '-';
  }
  return anchor;
}

// The anchors of a page's headings ('#' lines outside fenced code blocks).
std::set<std::string> anchors_of(const fs::path& page) {
  std::set<std::string> anchors;
  std::istringstream lines(read_text(page));
  bool fenced = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("```", 0) == 0) fenced = !fenced;
    if (fenced || line.empty() || line[0] != '#') continue;
    const size_t text = line.find_first_not_of('#');
    if (text == std::string::npos || line[text] != ' ') continue;
    size_t end = line.find_last_not_of(" \r");
    anchors.insert(anchor_of(line.substr(text + 1, end - text)));
  }
  return anchors;
}

// "page.md:LINE: target (why)" for each relative link of `page` that leads nowhere. A link is
// "](target)" outside fenced code blocks; one with a scheme (https:, mailto:) is not checked.
std::vector<std::string> broken_links_of(const fs::path& page) {
  std::vector<std::string> broken;
  std::istringstream lines(read_text(page));
  bool fenced = false;
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    if (line.rfind("```", 0) == 0) fenced = !fenced;
    if (fenced) continue;
    for (size_t at = line.find("]("); at != std::string::npos; at = line.find("](", at + 2)) {
      const size_t begin = at + 2;
      const size_t end = line.find_first_of(") ", begin);
      if (end == std::string::npos || end == begin) continue;
      const std::string target = line.substr(begin, end - begin);
      const size_t colon = target.find(':');
      if (colon != std::string::npos && target.find_first_of("/#") > colon) continue;  // a URL
      const size_t hash = target.find('#');
      const std::string file = target.substr(0, hash);
      const fs::path resolved = file.empty() ? page : page.parent_path() / file;
      auto report = [&](const std::string& why) {
        broken.push_back(page.string() + ":" + std::to_string(number) + ": " + target + " (" +
                         why + ")");
      };
      std::error_code error;
      if (!fs::exists(resolved, error)) {
        report("no such file or folder");
      } else if (hash != std::string::npos && fs::is_regular_file(resolved, error) &&
                 !anchors_of(resolved).count(target.substr(hash + 1))) {
        report("no heading with that anchor");
      }
    }
  }
  return broken;
}

// The Markdown pages of the tree below `root`, the folders .gitignore names left out (builds,
// dependencies, training runs' reports, GPU-check output).
std::vector<fs::path> markdown_pages(const fs::path& root) {
  std::vector<fs::path> pages;
  fs::recursive_directory_iterator walk(root), end;
  for (; walk != end; ++walk) {
    const std::string name = walk->path().filename().string();
    if (walk->is_directory() &&
        (name.rfind("build", 0) == 0 || name.rfind("cmake-build", 0) == 0 ||
         name.rfind('.', 0) == 0 || name == "__pycache__" ||
         (walk.depth() == 0 && (name == "gpu_check_out" || name == "runs")))) {
      walk.disable_recursion_pending();
      continue;
    }
    if (walk->is_regular_file() && walk->path().extension() == ".md") pages.push_back(walk->path());
  }
  std::sort(pages.begin(), pages.end());
  return pages;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += "  " + line + "\n";
  return text;
}

}  // namespace

TEST(DocsLinks, EveryRelativeLinkOfTheProjectsPagesLeadsToAFileAndHeading) {
  const fs::path root = PNEUMO_SOURCE_DIR;
  const std::vector<fs::path> pages = markdown_pages(root);
  ASSERT_GE(pages.size(), 10u) << "the pages were not found below " << root;
  std::vector<std::string> broken;
  size_t links = 0;
  for (const fs::path& page : pages) {
    const std::string text = read_text(page);
    for (size_t at = text.find("]("); at != std::string::npos; at = text.find("](", at + 2))
      ++links;
    for (std::string& line : broken_links_of(page)) broken.push_back(std::move(line));
  }
  EXPECT_GE(links, 100u) << "far fewer links than the pages hold: the scan is broken";
  EXPECT_TRUE(broken.empty()) << broken.size() << " broken links:\n" << joined(broken);
}

// The check itself: a missing page, a missing heading, a link into a fenced block and a URL.
TEST(DocsLinks, TheCheckFindsAMissingPageAndAMissingHeadingOnly) {
  pneumo::testing::TempDir dir;
  fs::create_directories(fs::path(dir.path()) / "docs");
  std::ofstream(dir.file("docs/target.md")) << "# Title\n\n## The step (mean ± sd), `x`\n"
                                               "```\n# not a heading\n```\n";
  std::ofstream(dir.file("README.md"))
      << "[ok](docs/target.md) and [ok too](docs/target.md#the-step-mean--sd-x)\n"
         "[gone](docs/missing.md) [web](https://example.org/a.md) [self](#intro)\n"
         "[bad heading](docs/target.md#not-a-heading)\n"
         "```\n[in code](nowhere.md)\n```\n"
         "# Intro\n";
  const std::vector<std::string> broken = broken_links_of(dir.file("README.md"));
  ASSERT_EQ(broken.size(), 2u) << joined(broken);
  EXPECT_NE(broken[0].find("README.md:2: docs/missing.md (no such file"), std::string::npos)
      << broken[0];
  EXPECT_NE(broken[1].find("README.md:3: docs/target.md#not-a-heading (no heading"),
            std::string::npos)
      << broken[1];
}

// Messages, --help texts and comments that send a reader to docs/<page>.md name a page that is
// there.
TEST(DocsLinks, EveryDocsPageTheSourcesNameExists) {
  const fs::path root = PNEUMO_SOURCE_DIR;
  std::vector<std::string> missing;
  size_t named = 0;
  for (const char* folder : {"src", "include", "kernels", "scripts", "tests"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      if (!entry.is_regular_file() || entry.path().filename() == "test_docs_links.cpp") continue;
      const std::string ext = entry.path().extension().string();
      if (ext != ".cpp" && ext != ".hpp" && ext != ".cu" && ext != ".cuh" && ext != ".py" &&
          ext != ".sh")
        continue;
      const std::string text = read_text(entry.path());
      auto name_char = [&](size_t i, const char* also) {
        const auto c = static_cast<unsigned char>(text[i]);
        return std::isalnum(c) || (c != 0 && std::strchr(also, text[i]) != nullptr);
      };
      for (size_t at = text.find("docs/"); at != std::string::npos;
           at = text.find("docs/", at + 5)) {
        if (at > 0 && name_char(at - 1, "_")) continue;  // part of a longer name
        size_t end = at + 5;
        while (end < text.size() && name_char(end, "-_/.")) ++end;
        std::string path = text.substr(at, end - at);
        while (!path.empty() && path.back() == '.') path.pop_back();  // a sentence's full stop
        if (path.size() < 4 || path.compare(path.size() - 3, 3, ".md") != 0) continue;
        ++named;
        if (!fs::exists(root / path))
          missing.push_back(fs::relative(entry.path(), root).string() + ": " + path);
      }
    }
  }
  EXPECT_GE(named, 5u) << "the sources name docs pages in many places: the scan is broken";
  EXPECT_TRUE(missing.empty()) << joined(missing);
}
