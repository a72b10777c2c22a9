// Counts in the words a person reads them: "1 run", "2 runs", "1,024 images".
export const plural = (n: number, word: string): string => `${n.toLocaleString('en-US')} ${word}${n === 1 ? '' : 's'}`;
