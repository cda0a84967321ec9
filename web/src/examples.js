// The Examples menu: the three examples of the original service's README.

export const EXAMPLES = [
  {
    title: 'Hello, World!',
    script: `def main():
    return {"message": "Hello, World!"}
`,
  },
  {
    title: 'Using libraries (numpy, pandas)',
    script: `import numpy as np
import pandas as pd

def main():
    data = np.array([1, 2, 3, 4, 5])
    df = pd.DataFrame(data, columns=['values'])
    return {
        "mean": float(np.mean(data)),
        "dataframe": df.to_dict()
    }
`,
  },
  {
    title: 'Error handling',
    script: `def main():
    try:
        result = 10 / 0
        return {"result": result}
    except Exception as e:
        return {"error": str(e)}
`,
  },
];
