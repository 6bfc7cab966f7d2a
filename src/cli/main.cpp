// The `pneumo` command.
#include <iostream>

int main() {
  std::cout << "pneumo\n";
  return 0;
}
